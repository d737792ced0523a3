from stampcheck.app.cli import main

main()
