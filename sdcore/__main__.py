from sdcore.cli import main

raise SystemExit(main())
