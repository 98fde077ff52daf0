"""``python -m unilstm ...`` runs the command line (:mod:`unilstm.cli`)."""

import sys

from .cli import main

sys.exit(main())
