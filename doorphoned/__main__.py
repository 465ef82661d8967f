from doorphoned.app.main import main

raise SystemExit(main())
