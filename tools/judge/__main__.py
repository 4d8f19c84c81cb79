import sys

from tools.judge.cli import main

sys.exit(main())
