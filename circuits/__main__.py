from circuits.cli import main

main()
