package sealog

// SetCrashHook lets tests die at a step of an append.
func SetCrashHook(f func(step string)) { crashHook = f }
