from dlaas_jupyter.trainer.cli import main

raise SystemExit(main())
