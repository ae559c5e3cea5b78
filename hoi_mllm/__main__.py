import sys

from hoi_mllm.cli import main

sys.exit(main())
