"""Building blocks of the experiment scripts (``main.py``, ``run.py``): training and
evaluation loops, argument/config handling, result reports and logging."""
