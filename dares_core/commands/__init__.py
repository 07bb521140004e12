"""The `dares` commands, one module each: NAME, HELP, DESCRIPTION, add_arguments(parser) and run(args). Modules
import torch and the like inside run() only, so that the command line is built before anything heavy loads."""
