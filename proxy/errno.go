package proxy

import "syscall"

const syscallEMFILE = syscall.EMFILE
