"""Graphs: the jobs criticloop runs and the ``criticloop`` command line that drives them.

``criticloop generate`` is the batch generation job; the LangGraph feedback graph
(``criticloop graph run``) is built here on top of it.
"""
