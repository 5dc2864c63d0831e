//! Running the real XDP program with BPF_PROG_TEST_RUN.
