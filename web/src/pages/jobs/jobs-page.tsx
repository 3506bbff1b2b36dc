// Scaffold: replaced by the page's implementation.
export function JobsPage({ path }: { path: string }) {
  void path;
  return <h1>JobsPage</h1>;
}
