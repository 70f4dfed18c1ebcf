import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// The page talks to the Sluice edge on another origin: start the edge with
// SLUICE_CORS_ORIGINS=http://localhost:5173 (Vite's dev server), or set SLUICE_URL below to where it runs.
export default defineConfig({ plugins: [react()], server: { port: 5173 } });
