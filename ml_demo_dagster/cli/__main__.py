import sys

from ml_demo_dagster.cli import main

sys.exit(main())
