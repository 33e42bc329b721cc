import sys

from hlfs.cli.main import main

sys.exit(main())
