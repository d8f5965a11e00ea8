"""The code behind scripts/lab.py (see its docstring): env, compose, listener, docker, local, commands."""
