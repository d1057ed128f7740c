import Foundation
import MGSupervisor

exit(CommandLineInterface.main(CommandLine.arguments))
