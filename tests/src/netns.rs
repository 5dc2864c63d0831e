//! Network namespaces and veth pairs for end-to-end tests (see netns guards).
