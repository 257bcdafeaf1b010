from hikari.cli import main

main()
