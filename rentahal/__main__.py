from rentahal.cli import main

main()
