from hicl_app.cli.main import main

main()
