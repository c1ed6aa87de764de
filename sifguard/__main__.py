from sifguard.cli.main import main

raise SystemExit(main())
