"""TUI: the Textual app where people review the cases the critics escalate.

The only package that imports ``textual``; ``criticloop review`` opens it.
"""
