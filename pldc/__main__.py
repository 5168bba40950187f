from pldc.cli import main

raise SystemExit(main())
