"""ttscale: test-time compute scaling of LLM reasoning.

This folder is the kernel (records and types, the Engine / Task / Verifier / Strategy
contracts, the ledger, retry, the record store, estimators and metrics); it imports
nothing else of the project. The other floors are folders beside it, installed and
imported under this name (pyproject's package-dir): `ttscale.backends` is `backends/`,
`ttscale.sandbox` is `sandbox/`, `ttscale.tasks`, `ttscale.verifiers`,
`ttscale.strategies`, `ttscale.report`, `ttscale.runner`, `ttscale.bench`.
"""

import os as _os

__version__ = "0.1.0"

# In a source checkout (not installed, or a second work tree of the same repository)
# the same names resolve to the folders beside this one.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "pyproject.toml")) and _root not in __path__:
    __path__.append(_root)
