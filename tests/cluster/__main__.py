import sys

from tests.cluster.localcluster import main

sys.exit(main())
