from stampcheck.cli import main

main()
