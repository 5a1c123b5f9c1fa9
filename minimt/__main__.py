"""python -m minimt COMMAND ...: the command line lives in minimt/tools/cli.py."""
from minimt.tools.cli import run

if __name__ == "__main__":
    run()
