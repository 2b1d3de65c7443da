// Package privatedir makes the directories envctl falls back to when a
// user has no home or XDG directories: one per user under the system's
// temporary directory, mode 0700, and refused when it is not this user's
// own plain directory (another user could have made it first, or put a
// symbolic link there).
package privatedir
