from pacs.cli import main

raise SystemExit(main())
