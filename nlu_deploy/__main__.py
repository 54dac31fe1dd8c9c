from nlu_deploy.cli import main

main()
