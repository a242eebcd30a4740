package main

import "testing"

func TestCommands(t *testing.T) {
	s := &store{values: map[string]string{}}
	for _, tc := range []struct{ line, want string }{
		{"GET greeting", "(nil)"},
		{"SET greeting hello world", "OK"},
		{"get greeting", "hello world"},
		{"SET other 1", "OK"},
		{"KEYS", "greeting other"},
		{"DEL other", "1"},
		{"DEL other", "0"},
		{"", "ERR empty command: SET KEY VALUE, GET KEY, DEL KEY, KEYS or QUIT"},
		{"GET", "ERR wrong number of arguments for GET"},
		{"FLUSHALL", `ERR unknown command "FLUSHALL": SET KEY VALUE, GET KEY, DEL KEY, KEYS or QUIT`},
	} {
		if got, quit := s.do(tc.line); got != tc.want || quit {
			t.Errorf("%q = %q (quit %v), want %q", tc.line, got, quit, tc.want)
		}
	}
	if got, quit := s.do("QUIT"); got != "OK" || !quit {
		t.Errorf("QUIT = %q, %v", got, quit)
	}
}
