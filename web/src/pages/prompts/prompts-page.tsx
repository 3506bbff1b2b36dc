// Scaffold: replaced by the page's implementation.
export function PromptsPage() {
  return <h1>PromptsPage</h1>;
}
