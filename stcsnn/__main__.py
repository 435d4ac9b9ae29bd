import sys

from stcsnn.cli import main

sys.exit(main())
