from r2kd.cli import main

raise SystemExit(main())
