from dnsserver.cli import main

raise SystemExit(main())
