from millrace_cli.app import main

main()
