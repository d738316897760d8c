"""`python -m mlxgpt train|generate ...`"""

import sys

from mlxgpt.cli import main

sys.exit(main())
