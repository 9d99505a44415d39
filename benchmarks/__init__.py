"""Side-by-side benchmarks and the scripts behind the README's tables and figures.

Run them from the repository root as modules, so that the repository's packages
(``models``, ``datasets``, ``experiments``, ``reference``) are importable::

    env/bin/python -m benchmarks.codec_bench --quick
    env/bin/python -m benchmarks.rdoq_bench --quick
    env/bin/python -m benchmarks.nnc_reproduction --qps -32 -26 --max_eval_batches 10
    env/bin/python -m benchmarks.ecqx_sweep --quick
    env/bin/python -m benchmarks.update_coding --quick
    env/bin/python -m benchmarks.leaderboard --quick --output /tmp/leaderboard.json

Results go to ``benchmarks/results/`` (JSON and PNG).
"""
