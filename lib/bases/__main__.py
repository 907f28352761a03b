import sys

from lib.bases.core import main

sys.exit(main())
