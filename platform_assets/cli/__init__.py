"""`mlplat`, the command line: the app (`main.py`) and one module of commands per capability."""
