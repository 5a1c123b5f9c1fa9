"""UserError: the one kind of error minimt expects. A bad setting, a file that is not what it should be, a text that
is not a string: each is raised as a UserError whose message names the problem and the fix in one line, and the
command line prints exactly that line. Any other exception is a bug, and keeps its traceback.

UserError is a ValueError (and UserTypeError a TypeError too), so `except ValueError` in a user's code still works.
"""


class UserError(ValueError):
    pass


class UserTypeError(UserError, TypeError):
    pass
