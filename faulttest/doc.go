// Package faulttest holds cross-cutting fault tests: the archiving hooks
// under crashes (kill -9 in the middle of real Postfix traffic), failing or
// slow downstream servers, a full disk, connection floods and slow clients,
// and hostile SMTP input. The tests are in the _test files; each is bounded
// to seconds. Under CI=true a missing Postfix fails them instead of skipping.
package faulttest
