import sys

from optdfa.cli.main import main

sys.exit(main())
