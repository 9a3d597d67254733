from algomesh.sidecar.procs import die_with_parent

from .runner import main

die_with_parent()
main()
