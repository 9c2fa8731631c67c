from vmmigration.cli import main

main()
