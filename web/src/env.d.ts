// esbuild bundles imported stylesheets into the page's one CSS asset.
declare module '*.css';
