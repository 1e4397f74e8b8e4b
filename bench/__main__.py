"""`python -m bench` (`make bench`): run every measurement; see bench/suite.py.

Nothing heavy is imported at module level: the pipeline's spawned worker processes import
this module again (as `__mp_main__`) and must not pay for it.
"""

import sys

if __name__ == "__main__":
    from bench.suite import main

    sys.exit(main())
