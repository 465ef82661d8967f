from doorphoned.main import main

raise SystemExit(main())
