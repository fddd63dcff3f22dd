"""On-demand analyses of finished runs; each reads a run folder and caches its result in <run>/analysis/.

Import the submodule you need (``from sdcore.analysis.compare import compare_table``): they pull in
different dependencies, and this package imports none of them.
"""
