import sys

from analyzer.cli.main import main

sys.exit(main())
