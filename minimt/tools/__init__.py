"""Tools built on the core and io/: the command line, corpus embedding, trace, plot."""
