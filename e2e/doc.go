// Package e2e holds the end-to-end tests of raftexample: they build the
// binary once (internal/proctest) and drive members as processes of their
// own over HTTP, with real signals, files and networks, using no
// identifier of the server's code.
//
//   - process_test.go: the Procfile, SIGKILL during a write load, SIGTERM,
//     torn WAL tails, removed members, no quorum, snapshots, running out of
//     file descriptors.
//   - fault_disk_test.go: crashes at failpoints, damaged snapshots and
//     state files, data directories that are not directories, a full disk.
//   - fault_test.go, fault_net_test.go, fault_history_test.go: clusters under
//     concurrent clients while nemeses kill, pause, partition and replace
//     members; the history is checked for linearizability with the model
//     of internal/kvhistory.
//   - fault_lock_test.go: clients take a lock on short leases under the
//     same nemeses and write to a resource that checks fencing tokens; the
//     lock's history is checked.
//   - identity_test.go, logging_test.go: stale data from another cluster,
//     quiet start-up logs.
//
// go test -short ./e2e skips the fault schedules and the slowest process
// tests; a randomised test logs its seed and replays with
// go test ./e2e -run '^TestFaultFive$' -seed N.
package e2e
