import sys

from framelab.cli import main

sys.exit(main())
