"""pypod data: volumes for runs and workers (`--pvc`), and `pypod data fetch|status|ls|rm`,
downloads onto a PVC by a Job that resumes and verifies."""
